"""Adapters behind the ports: storage backends, dispatchers and the clock."""
