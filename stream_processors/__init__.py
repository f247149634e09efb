"""Faust stream processors over the conversation log: moderation, then context assembly."""
