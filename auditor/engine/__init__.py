"""The step engine: steps as data, their order, the SQL script and the executor that runs them."""
