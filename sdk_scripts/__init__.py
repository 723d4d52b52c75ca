"""`lsal-ops`: commands for the people who run annotation projects."""
