"""Throwaway local peers (Postgres, Pub/Sub emulator) for tests, benchmarks and `mailwatch dev`.

Each peer is started as a child process and stopped by its own process id.
"""
