"""Sources: the raw schemas shoplake accepts and where their files can live."""
