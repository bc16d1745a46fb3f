"""Model kinds (`kind.Kind`, one package each) and what they share (`common/`); the model
folder (`folder.py`) and the models that ship inside the package (`bundled.py`)."""
