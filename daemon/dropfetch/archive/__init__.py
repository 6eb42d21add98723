"""Reading archives safely: format sniffing, decompression, tar and zip members, and the
output tree they are written to. :mod:`dropfetch.extract` is the entry point."""
