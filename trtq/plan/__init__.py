"""The planner: budgets, the ILP (no torch), the Pareto sweep, plan.yaml."""
