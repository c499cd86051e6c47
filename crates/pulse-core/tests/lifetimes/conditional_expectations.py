"""Reference values for crates/pulse-core/tests/backtest.rs: lifetimes' conditional expected
number of repeat purchases E[X(T, T+t) | x, t_x, T] for fixed parameters (the defaults of
[scoring.model], CDNOW fits, in weeks). Not run by CI; run once by hand:

    python3 -m venv .tools/venv-lifetimes && .tools/venv-lifetimes/bin/pip install lifetimes==0.11.3
    .tools/venv-lifetimes/bin/python crates/pulse-core/tests/lifetimes/conditional_expectations.py

and paste its output into the test. The histories are given as purchase days (day 0 is the
first purchase) and a split day, exactly as the test builds them.
"""
import pandas as pd
from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

CASES = [
    ([0], 70),
    ([0, 14], 100),
    ([0, 7, 21, 35, 70], 140),
    ([0, 3, 5, 200, 210, 250, 300], 365),
    ([7 * k for k in range(12)], 84),
]
HORIZON_WEEKS = [1, 13, 39]

bg = BetaGeoFitter()
bg.params_ = pd.Series({"r": 0.2425982, "alpha": 4.4136842, "a": 0.7929899, "b": 2.4261667})
mbg = ModifiedBetaGeoFitter()
mbg.params_ = pd.Series({"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614})
pareto = ParetoNBDFitter()
pareto.params_ = pd.Series({"r": 0.5533, "alpha": 10.5776, "s": 0.6061, "beta": 11.6689})

for name, model in [("bg_nbd", bg), ("mbg_nbd", mbg), ("pareto_nbd", pareto)]:
    for days, split in CASES:
        x = len(days) - 1
        t_x = (days[-1] - days[0]) / 7.0
        T = split / 7.0
        values = [
            float(model.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T))
            for t in HORIZON_WEEKS
        ]
        print(f'    ("{name}", &{days}, {split}, [{", ".join(repr(v) for v in values)}]),')
