"""Adapters: everything that talks to Azure Storage or Azure OpenAI, used by the stages."""
