"""One module per benchmark section; each has run(ctx, section)."""
