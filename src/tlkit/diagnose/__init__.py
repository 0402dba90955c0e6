"""Measurements about a transfer: did it help (baseline verdict), which backbone (transferability
scores), how far apart the domains are (divergence), how general each layer is (probes), how
much the representation moved (forgetting), and how it does per subgroup and how well it is
calibrated. Pure functions of features and outputs where they can be; reading models and data is
left to the commands that call them."""
