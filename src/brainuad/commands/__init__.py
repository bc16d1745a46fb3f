"""The command line (`cli.py`) and the commands that chain the stages: `segment`,
`benchmark`, `demo`."""
