"""Tables and figures built from run folders."""
