"""Everything in tlkit that chooses: ``freeze_strategy: auto`` (auto.py: the decision, with
candidates.py, trials.py, budget.py for costs and successive halving, pixels.py for the raw
pixels' test, classical.py for the classical comparison, record.py for the record of trials),
``adaptation.method: auto`` (adapt_auto.py), ``tlkit advise`` (advise.py), ``tlkit compare``
(compare.py) and the configs they compare (variants.py).

They sit below ``tlkit.run`` (a fit resolves auto before it trains), so what trains a whole run
(compare's runs, adaptation auto's and advise's trials) takes ``tlkit.run.fit_run`` from its
caller."""
