"""Cortical meshes: the template surfaces shipped offline, and distances along them.

(Being written: see the module's functions once they land.)
"""
