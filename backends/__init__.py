"""Code generators, one per target: each turns checked IR into a standalone
Python module (see LANGUAGE.md section 4). Installed as ``tcc.backends``."""
