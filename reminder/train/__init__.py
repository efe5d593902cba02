"""Training: the paper's continual scenarios, and your own data step by step.

``from reminder.train import fit``: see :func:`reminder.train.custom.fit`.
"""


def __getattr__(name):
    if name == "fit":  # loaded on use: importing a submodule stays as cheap as before
        from reminder.train.custom import fit

        return fit
    raise AttributeError(f"module 'reminder.train' has no attribute {name!r}")
