"""Developer tools: the board emulator, benchmarks and checks."""
