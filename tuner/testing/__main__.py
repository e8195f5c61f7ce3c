"""`python -m tuner.testing --port N [--mode M] [--fail-every n]`: the stub server."""

from tuner.testing.stub import main

main()
