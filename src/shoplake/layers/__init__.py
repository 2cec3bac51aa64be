"""Layer declarations: one spec (and one .sql file) per table, grouped by layer."""
