"""SMS webhook gateway: VoIPBIN-compatible Message API between SMS carriers and customers."""
