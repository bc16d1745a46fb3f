"""Networks (pure torch: no Lightning here) and the name -> configuration registry."""
