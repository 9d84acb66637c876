"""Serving: the policies that rank requests, their exploration and the propensities they log, and the serving
log a ranking service keeps for counterfactual evaluation. The simulator serves its traffic through it, the
off-policy check reads its log, the closed loop and split tests choose its policies."""
