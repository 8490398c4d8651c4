"""Making data sets in the npz format of :mod:`dppo.data`: scripted demonstrators (Avoid, robomimic tasks), the
SAC expert behind the D4RL-style locomotion sets, and converters from D4RL, Minari and robomimic files.

This package sits above the runners (the locomotion maker trains SAC with :mod:`dppo.runners.off_policy`);
nothing below it imports it. The ``dppo data avoid|gym|robomimic`` commands run its makers.
"""
