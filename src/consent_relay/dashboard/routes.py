"""The web dashboard at /dashboard (server-rendered with Jinja2)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/dashboard", include_in_schema=False)
