"""Staff accounts in the staff pages (admins only): list, add, new one-time password, remove.

The same as ``bart central staff add|reset|remove|list``, which is how the first
admin is made. Rules, on top of :class:`central.staff.accounts.StaffAccounts`:

* a one-time password is shown once, in the answer to the POST that made it
  (never in a URL, never stored in clear, never logged); it is handed over
  in person and the first login with it must choose a personal password;
* an admin can neither remove nor reset their own account here (the first
  would lock the last admin out of these pages, the second ends their own
  session; ``/staff/password`` changes one's own password);
* removing asks for a ticked confirmation; every change is in the audit log
  under the admin's name.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..passwords import InvalidName, name_key, normalise_name
from .accounts import ROLES, InvalidRole, NameTaken, StaffMember, UnknownStaff
from .web import (
    accounts_of,
    csrf_ok,
    done_text,
    not_admin,
    read_form,
    redirect,
    render,
    require_member,
    tr,
)

router = APIRouter(include_in_schema=False)


async def _page(request: Request, member: StaffMember, *, status: int = 200, error: str = "",
                issued: dict[str, str] | None = None, typed: dict[str, str] | None = None,
                ) -> Response:
    members = await asyncio.to_thread(accounts_of(request).members)
    return render(request, "accounts.html", member, status=status, page="/staff/accounts",
                  members=members,
                  roles=ROLES, error=error, issued=issued, typed=typed or {},
                  done=done_text(request))


async def _admin_form(request: Request) -> tuple[StaffMember, dict[str, str]] | Response:
    """The admin and their form, or the page that refuses them."""
    member = await require_member(request)
    if (refused := not_admin(request, member)) is not None:
        return refused
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return await _page(request, member, status=403, error=tr(request, "error.csrf"))
    return member, values


async def _other_account(request: Request) -> tuple[StaffMember, dict[str, str], str] | Response:
    """The admin, their form and the account it names — never their own."""
    got = await _admin_form(request)
    if isinstance(got, Response):
        return got
    member, values = got
    name = values.get("name", "")
    try:
        own = name_key(name) == member.key
    except InvalidName:
        own = False  # and no account has that name: the action answers 404
    if own:
        return await _page(request, member, status=422, error=tr(request, "accounts.not_self"))
    return member, values, name


@router.get("/staff/accounts")
async def accounts_page(request: Request) -> Response:
    """Every staff account, and the form to add one."""
    member = await require_member(request)
    if (refused := not_admin(request, member)) is not None:
        return refused
    return await _page(request, member)


@router.post("/staff/accounts")
async def account_add(request: Request) -> Response:
    """Create an account; the answer shows its one-time password, once."""
    got = await _admin_form(request)
    if isinstance(got, Response):
        return got
    member, values = got
    name, role = values.get("name", ""), values.get("role", "")
    typed = {"name": name[:200], "role": role[:20]}
    accounts = accounts_of(request)
    try:
        otp = await asyncio.to_thread(accounts.add, name, role, by=member.name)
    except InvalidName:
        return await _page(request, member, status=422, typed=typed,
                           error=tr(request, "accounts.bad_name"))
    except InvalidRole:
        return await _page(request, member, status=422, typed=typed,
                           error=tr(request, "accounts.bad_role"))
    except NameTaken:
        return await _page(request, member, status=409, typed=typed,
                           error=tr(request, "accounts.taken"))
    return await _page(request, member, issued=_issued(normalise_name(name), otp, "new"))


@router.post("/staff/accounts/reset")
async def account_reset(request: Request) -> Response:
    """A new one-time password for a forgotten one (ends that account's sessions)."""
    got = await _other_account(request)
    if isinstance(got, Response):
        return got
    member, _values, name = got
    accounts = accounts_of(request)
    try:
        otp = await asyncio.to_thread(accounts.reset, name, by=member.name)
    except (UnknownStaff, InvalidName):
        return await _page(request, member, status=404, error=tr(request, "accounts.unknown"))
    reset = await asyncio.to_thread(accounts.get, name)  # the name as it is spelled
    return await _page(request, member,
                       issued=_issued(reset.name if reset else name, otp, "reset"))


@router.post("/staff/accounts/remove")
async def account_remove(request: Request) -> Response:
    """Delete an account and end its sessions (after a ticked confirmation)."""
    got = await _other_account(request)
    if isinstance(got, Response):
        return got
    member, values, name = got
    if values.get("confirm") != "yes":
        return await _page(request, member, status=422,
                           error=tr(request, "accounts.confirm_needed", name=name[:60]))
    try:
        await asyncio.to_thread(accounts_of(request).remove, name, by=member.name)
    except (UnknownStaff, InvalidName):
        return await _page(request, member, status=404, error=tr(request, "accounts.unknown"))
    return redirect("/staff/accounts", "account_removed")


def _issued(name: str, otp: str, kind: str) -> dict[str, str]:
    return {"name": name, "otp": otp, "kind": kind}
