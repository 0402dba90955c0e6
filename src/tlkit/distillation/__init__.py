"""Knowledge distillation from a finished run (the teacher) into a smaller student, itself an
ordinary run directory (``tlkit distill``, ``tlkit.distillation``).

- ``student.py``: the truncated copy of the teacher (fewer layers or blocks, its weights);
- ``teacher.py``: the teacher's saved model, its outputs on the student's inputs, and the
  comparison of the two on the test split;
- ``objective.py``: the loss (soft targets at temperature T, scaled by T^2, plus the labels)
  and the loop hook that trains with it;
- ``build.py``: the student and its hook from a config's ``distill`` section;
- ``config.py``: the student's config from the teacher's run.
"""
