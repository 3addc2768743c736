"""The one command registry: key bindings, the footer, `?` help and the command palette all come from here.

A command is what an operator can do on the dashboard. ``mutating`` commands change the world
(build, launch, terminate, pin) and disappear everywhere when nitrodeck runs read-only (test-sign
only asks an enclave for a signature, so core allows it read-only and so does the TUI):
the App's ``check_action`` hides their keys and the palette provider leaves them out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Command:
    id: str
    key: str  # Textual key name ("b", "T", "question_mark", "slash")
    label: str  # short, for the footer
    description: str  # one sentence, for help and the palette
    action: str  # the action name, without "action_"
    mutating: bool = False
    group: str = "view"
    #: shown in the footer (the rest is still in help and the palette)
    footer: bool = True
    #: the key as written in help (Textual key names are not what people type)
    display_key: str = ""
    #: more keys for the same command, bound with priority so no focused widget swallows them
    priority_keys: str = ""

    @property
    def shown_key(self) -> str:
        return self.display_key or self.key


GROUPS = ("enclaves", "console", "view", "app")

COMMANDS: tuple[Command, ...] = (
    Command("build", "b", "Build", "Build an EIF (Docker image, URI, rootfs folder or the nitrodeck payload)", "build", True, "enclaves"),
    Command("launch", "l", "Launch", "Launch an enclave from an EIF in the library", "launch", True, "enclaves"),
    Command("terminate", "t", "Terminate", "Terminate the selected enclave (asks first)", "terminate", True, "enclaves"),
    Command("terminate-all", "T", "Term. all", "Terminate every enclave (type `all` to confirm)", "terminate_all", True, "enclaves", footer=False),
    Command("test-sign", "s", "Test-sign", "Have the selected enclave sign a payload and verify its attestation", "test_sign", False, "enclaves"),
    Command("pin", "P", "Pin PCRs", "Pin the selected enclave's measurements as the expected PCRs of its image", "pin", True, "enclaves", footer=False),
    Command("open", "enter", "Open", "Open the selected enclave's console (or the kept log of an exited one)", "open_console", False, "enclaves", footer=False),
    Command("yank", "y", "Yank", "Copy the selected enclave's ID, PCR0 or all PCRs to the clipboard", "yank", False, "enclaves", footer=False),
    Command("down", "j", "Down", "Move down (the table, or the focused pane)", "cursor('down')", False, "view", footer=False),
    Command("up", "k", "Up", "Move up (the table, or the focused pane)", "cursor('up')", False, "view", footer=False),
    Command("top", "g", "Top", "Go to the first row (or the top of the focused pane)", "cursor('top')", False, "view", footer=False),
    Command("bottom", "G", "Bottom", "Go to the last row (or the bottom of the focused pane)", "cursor('bottom')", False, "view", footer=False),
    Command("sort", "o", "Sort", "Sort the table by the next column (the header shows the arrow)", "sort_next", False, "view", footer=False),
    Command("sort-reverse", "O", "Reverse", "Reverse the table's sort order", "sort_reverse", False, "view", footer=False),
    Command("clear-exited", "x", "Clear exited", "Clear exited enclaves from the table (the journal keeps them: `nitrodeck events`)", "clear_exited", False, "view", footer=False),
    Command("filter", "slash", "Filter", "Filter the enclave table, or search the console when it has focus", "filter", False, "view", display_key="/"),
    Command("clear-filter", "escape", "Clear", "Clear the table filter (or close the search box)", "clear_filter", False, "view", footer=False, display_key="esc"),
    Command("refresh", "r", "Refresh", "Refresh now", "refresh", False, "view", footer=False),
    Command("pause", "p", "Pause", "Pause or resume the periodic refresh", "toggle_pause", False, "view"),
    Command("pane-detail", "1", "Detail", "Show the enclave detail pane (PCRs, EIF metadata)", "show_pane('detail')", False, "view", footer=False),
    Command("pane-resources", "2", "Resources", "Show the resources pane (CPU pool, hugepages, host)", "show_pane('resources')", False, "view", footer=False),
    Command("pane-console", "3", "Console", "Show the console of the selected enclave", "show_pane('console')", False, "view", footer=False),
    Command("pane-commands", "4", "Commands", "Show the command log (every nitro-cli command run)", "show_pane('commands')", False, "view", footer=False),
    Command("follow", "f", "Follow", "Follow the console tail (or stop following)", "toggle_follow", False, "console", footer=False),
    Command("wrap", "w", "Wrap", "Wrap long console lines (or not)", "toggle_wrap", False, "console", footer=False),
    Command("next-match", "n", "Next", "Jump to the next console search match", "next_match", False, "console", footer=False),
    Command("prev-match", "N", "Previous", "Jump to the previous console search match", "prev_match", False, "console", footer=False),
    Command("save-console", "S", "Save log", "Save the console buffer to a file under the logs folder", "save_console", False, "console", footer=False),
    Command("doctor", "d", "Doctor", "Check this host's preconditions for running enclaves: each check, what was found, the fix", "doctor", False, "view", footer=False),
    Command("audit", "A", "Audit log", "Open the audit log (every mutating action, who, when, result) in a viewer", "audit_log", False, "app", footer=False),
    Command("help", "question_mark", "Help", "Show every key and command", "help", False, "app", display_key="?"),
    Command("palette", "colon", "Palette", "Open the command palette (also lists enclaves to jump to and EIFs to launch)", "command_palette", False, "app", footer=False, display_key=": ctrl+p", priority_keys="ctrl+p"),
    Command("quit", "q", "Quit", "Quit nitrodeck (enclaves keep running)", "quit", False, "app"),
)

BY_ID = {c.id: c for c in COMMANDS}
#: action name (without parameters) -> command; used by check_action
BY_ACTION = {c.action.split("(")[0]: c for c in COMMANDS}
MUTATING_ACTIONS = frozenset(name for name, c in BY_ACTION.items() if c.mutating)


def bindings() -> list[Binding]:
    out = [
        Binding(c.key, c.action, c.label, show=c.footer, id=c.id, tooltip=c.description, key_display=c.display_key or None)
        for c in COMMANDS
    ]
    # ctrl+p with priority: Textual only adds its own palette binding when no binding opens the palette
    out += [Binding(c.priority_keys, c.action, c.label, show=False, priority=True) for c in COMMANDS if c.priority_keys]
    return out


#: keys of the mutating commands; read-only mode hides them and says why when one is pressed
MUTATING_KEYS = {c.key: c for c in COMMANDS if c.mutating}
BY_KEY = {c.key: c for c in COMMANDS}


def visible(read_only: bool, hidden: frozenset[str] = frozenset()) -> list[Command]:
    """The commands an operator may use now: read-only mode drops every mutating one, and ``hidden``
    (action names) what the dashboard's source cannot serve (a remote host cannot test-sign)."""
    return [c for c in COMMANDS if not (read_only and c.mutating) and c.action.split("(")[0] not in hidden]


def help_rows(read_only: bool, hidden: frozenset[str] = frozenset()) -> Iterable[tuple[str, str, str, str]]:
    """(group, key, label, description), grouped in GROUPS order."""
    cmds = visible(read_only, hidden)
    for group in GROUPS:
        for c in cmds:
            if c.group == group:
                yield group, c.shown_key, c.label, c.description


def dashboard_of(provider: Provider) -> Any:
    """The dashboard the palette serves: the screen it was opened over, else the app's own dashboard
    (the palette opened over a dialog). None when there is none (the fleet's host table)."""
    screen = provider.screen
    if hasattr(screen, "run_command"):
        return screen
    return getattr(provider.app, "dashboard", None)


class CommandsProvider(Provider):
    """Palette entries from the registry; read-only mode leaves out the mutating ones."""

    def _commands(self) -> list[Command]:
        dash = dashboard_of(self)
        read_only = bool(getattr(dash, "read_only", False))
        hidden = frozenset(getattr(dash, "unavailable", None) or ())
        return [c for c in visible(read_only, hidden) if c.id != "palette"]

    def _runner(self, command: Command):  # type: ignore[no-untyped-def]
        # run_command re-checks read-only: the palette is a second way in, so it gets a second guard
        runner = getattr(dashboard_of(self), "run_command", None)
        if runner is not None:
            return partial(runner, command.id)
        return partial(self.app.run_action, command.action)

    async def discover(self) -> Hits:
        for c in self._commands():
            yield DiscoveryHit(f"{c.label}  ({c.shown_key})", self._runner(c), text=c.label, help=c.description)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for c in self._commands():
            text = f"{c.label} {c.id}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(c.label), self._runner(c), text=c.label, help=c.description)


class EnclavesProvider(Provider):
    """Palette entries for the enclaves in the table: choosing one selects its row (k9s's `:` jump)."""

    def _entries(self) -> list[tuple[str, str, str]]:
        dash = dashboard_of(self)
        snapshot = getattr(dash, "snapshot", None)
        running = list(snapshot.enclaves) if snapshot is not None else []
        gone = list(getattr(dash, "gone", {}).values())
        out = []
        for enclave, exited in [(e, False) for e in running] + [(e, True) for e in gone]:
            state = "exited" if exited else enclave.state.lower()
            out.append((f"enclave {enclave.label}", f"{enclave.enclave_id}  CID {enclave.cid}  {state}", enclave.enclave_id))
        return out

    def _jump(self, enclave_id: str):  # type: ignore[no-untyped-def]
        return partial(dashboard_of(self).jump_to, enclave_id)

    async def discover(self) -> Hits:
        for title, help, enclave_id in self._entries():
            yield DiscoveryHit(title, self._jump(enclave_id), text=title, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help, enclave_id in self._entries():
            score = matcher.match(f"{title} {enclave_id}")
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._jump(enclave_id), text=title, help=help)


class EifProvider(Provider):
    """Palette entries for the EIFs in the library: choosing one opens launch with it chosen.
    Launching changes the world, so read-only mode lists none."""

    def _entries(self) -> list[Path]:
        dash = dashboard_of(self)
        if dash is None or bool(getattr(dash, "read_only", False)):
            return []
        source = getattr(dash, "source", None)
        return list(source.eif_library()) if source is not None else []

    def _launch(self, path: Path):  # type: ignore[no-untyped-def]
        return partial(dashboard_of(self).launch_eif, path)

    async def discover(self) -> Hits:
        for path in await asyncio.to_thread(self._entries):
            yield DiscoveryHit(f"launch {path.name}", self._launch(path), text=f"launch {path.name}", help=str(path))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for path in await asyncio.to_thread(self._entries):
            title = f"launch {path.name}"
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._launch(path), text=title, help=str(path))
