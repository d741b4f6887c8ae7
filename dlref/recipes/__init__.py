"""One module per chapter of the book; see registry.RECIPES and DESIGN.md section 2."""
