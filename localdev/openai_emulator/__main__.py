"""`python -m localdev.openai_emulator`: run the emulator (localdev.openai_emulator.cli)."""

from localdev.openai_emulator.cli import main

if __name__ == "__main__":
    main()
