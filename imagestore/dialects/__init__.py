"""Backend differences, one small module per database (the rest of the code is portable)."""
