"""Views of LEAF's retrospective tree and of training runs (rich terminal, later matplotlib)."""
