"""Small hand-made molecules (positions in Å, atomic numbers) shared by the tests."""

import math

import numpy as np


def methane(r=1.09):
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    return np.vstack([[0, 0, 0], r * tet]), np.array([6, 1, 1, 1, 1])


def water():
    a = math.radians(104.5 / 2)
    pos = [
        [0, 0, 0],
        [0.96 * math.sin(a), 0.96 * math.cos(a), 0],
        [-0.96 * math.sin(a), 0.96 * math.cos(a), 0],
    ]
    return np.array(pos), np.array([8, 1, 1])


def ethylene():
    c, h, a = 1.33 / 2, 1.087, math.radians(121.3)
    hx, hy = c - h * math.cos(a), h * math.sin(a)
    pos = [[-c, 0, 0], [c, 0, 0], [hx, hy, 0], [hx, -hy, 0], [-hx, hy, 0], [-hx, -hy, 0]]
    return np.array(pos), np.array([6, 6, 1, 1, 1, 1])


def hcn():
    return np.array([[0, 0, -1.065], [0, 0, 0], [0, 0, 1.156]]), np.array([1, 6, 7])


def pentavalent_carbon():
    """C with five H at bond length (trigonal bipyramid): a valence error."""
    eq = [[math.cos(t), math.sin(t), 0] for t in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return np.vstack([[0, 0, 0], 1.09 * np.array(eq + [[0, 0, 1], [0, 0, -1]])]), np.array(
        [6, 1, 1, 1, 1, 1]
    )
