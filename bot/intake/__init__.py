"""Intake: webhook deliveries verified and planned into jobs, and comment commands parsed."""
