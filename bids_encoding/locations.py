"""Locations: voxels, vertices and grayordinates as columns of samples x locations arrays.

(Being written.)
"""
