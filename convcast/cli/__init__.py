"""Command-line interface: `convcast fit | validate | test | predict | demo | nowcast`."""
