"""Prompts: hypernetwork tags, prompt editing schedules, and the conditioning (emphasis, chunks, CLIP skip)."""
