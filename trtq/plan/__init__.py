"""The planner: budgets, the ILP (no torch), the Pareto sweep, plan.yaml.

`request.py` declares the stage's settings once (`PlanRequest`: the CLI options and the library's
request); `api.solve_plan` turns a layer graph, a profile and a sensitivity table into a `Plan`;
`costs.py` builds the cost matrices, `ilp.py` solves them (numpy in, one choice per group out) and
`budgets.py` parses `decode@16=0.6`. A new constraint is a `Constraint` row in `api.problem_for`;
a new setting is a field of `PlanRequest` (its flag, default and help come with it).
"""
