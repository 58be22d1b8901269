"""The service's database layer (models), laid out folder-per-table as the team's guide has it."""
