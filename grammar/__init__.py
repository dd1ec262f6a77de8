"""The .loop grammar (loop.lark), installed as package data of tcc.grammar."""
