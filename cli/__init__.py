"""The `compressor` command line (Typer): one thin module per command."""
