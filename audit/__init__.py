"""The drift audit of a window of labeled examples against a reference window: named statistical tests
(`stattests`), windows and their slices (`windows`), the checks and their verdict (`drift`), conversion at equal
label age (`maturity`) and the one-page report (`report`). The model gate (`gate/`), off-policy evaluation
(`ope/`), A/B analysis (`ab/`) and promotion (`promotion/`) stand beside and above it."""
