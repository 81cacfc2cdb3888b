"""Rowsmith's local stack, never deployed: Azurite, a managed-identity endpoint and an Azure
OpenAI emulator on loopback ports (see stack.py), plus the local runner."""
