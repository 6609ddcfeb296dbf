"""Ports of the authors' and papers' reference code that the tests compare the library with.

One module per source, each function as close to the published code as a CPU port allows (``.cuda()`` removed,
one process). They are plain functions of tensors: nothing here imports :mod:`contrasphere`.
"""
