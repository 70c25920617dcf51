r"""
annogen: annotated, runnable implementations of image-generation models.

Each chapter is a subpackage (`annogen.<chapter>`) that runs on a laptop CPU with
`python -m annogen.<chapter>`; the course order is in `course.toml`.
"""

__version__ = "0.1.0"
