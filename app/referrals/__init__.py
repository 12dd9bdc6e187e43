"""Referrals: what a decision asks for, who it went to, and where it stands."""
