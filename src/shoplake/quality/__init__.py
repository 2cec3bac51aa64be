"""Quality: checks, quarantine and the row ledger."""
