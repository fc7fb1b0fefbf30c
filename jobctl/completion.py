"""Shell completion scripts for bash and zsh, made from jobctl's own argument parser.

The scripts are static: commands, subcommands and options as the parser has them, file names
after the options that take a file. Standard library only.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh")
FILE_OPTIONS = ("--cacert", "--cert", "--key", "--config")
_SAFE = re.compile(r"[A-Za-z0-9_.:/=-]+")


@dataclass
class Command:
    """One level of the parser: its options, those that take a value, its subcommands."""

    options: list[str] = field(default_factory=list)
    takes_value: list[str] = field(default_factory=list)
    commands: dict[str, tuple[str, Command]] = field(default_factory=dict)  # name: (help, ...)
    choices: dict[str, list[str]] = field(default_factory=dict)  # positional choices by name


def describe(parser: argparse.ArgumentParser) -> Command:
    command = Command()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                command.commands[name] = (helps.get(name, ""), describe(sub))
        elif action.option_strings:
            command.options.extend(action.option_strings)
            if action.nargs != 0:
                command.takes_value.extend(action.option_strings)
        elif action.choices is not None:
            command.choices[action.dest] = [str(c) for c in action.choices]
    return command


def _words(items: list[str]) -> str:
    for item in items:
        assert _SAFE.fullmatch(item), item  # nothing a shell would need quoted
    return " ".join(items)


def _paths(top: Command) -> list[tuple[str, Command]]:
    """Every command and subcommand, as ``"config contexts"``-style paths."""
    found: list[tuple[str, Command]] = []
    for name, (_, command) in top.commands.items():
        found.append((name, command))
        found.extend((f"{name} {sub}", c) for sub, c in _paths(command))
    return found


def _parents(top: Command) -> str:
    """A case pattern matching the commands that have subcommands."""
    return "|".join(f'"{p}"' for p, c in _paths(top) if c.commands) or '"-"'


def bash(parser: argparse.ArgumentParser) -> str:
    top = describe(parser)
    value_options = sorted(
        {o for _, c in [("", top), *_paths(top)] for o in c.takes_value if o.startswith("--")}
    )
    cases = []
    for path, command in _paths(top):
        words = [*command.commands, *(w for ws in command.choices.values() for w in ws)]
        cases.append(
            f'        "{path}")\n'
            f'            opts="{_words(command.options)}"\n'
            f'            words="{_words(words)}" ;;'
        )
    return f"""\
# bash completion for jobctl. Load it with: source <(jobctl completion bash)
# or install it: jobctl completion bash > ~/.local/share/bash-completion/completions/jobctl
_jobctl() {{
    local cur prev cmdpath="" opts words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        {"|".join(FILE_OPTIONS)})
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        {"|".join(value_options)})
            COMPREPLY=()
            return ;;
    esac
    # The command (and subcommand) so far: words before the cursor, options and their
    # values left out; everything after -- is the job's.
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --) COMPREPLY=($(compgen -f -- "$cur")); return ;;
            {"|".join(value_options)}) ((i++)) ;;
            -*) ;;
            *)
                case "$cmdpath" in
                    "") cmdpath="${{COMP_WORDS[i]}}" ;;
                    {_parents(top)}) cmdpath="$cmdpath ${{COMP_WORDS[i]}}" ;;
                    *) break ;;
                esac ;;
        esac
    done
    case "$cmdpath" in
        "")
            opts="{_words(top.options)}"
            words="{_words(list(top.commands))}" ;;
{chr(10).join(cases)}
        *) opts=""; words="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}}
complete -F _jobctl jobctl
"""


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def zsh(parser: argparse.ArgumentParser) -> str:
    top = describe(parser)
    value_options = sorted(
        {o for _, c in [("", top), *_paths(top)] for o in c.takes_value if o.startswith("--")}
    )

    def described(command: Command) -> str:
        items = [
            f"{name}:{help_}".replace("'", "") for name, (help_, _) in command.commands.items()
        ]
        items += [w for ws in command.choices.values() for w in ws]
        return " ".join(_zsh_quote(item) for item in items)

    cases = [
        f'    ("{path}") opts=({_words(command.options)}); words=({described(command)}) ;;'
        for path, command in _paths(top)
    ]
    return f"""\
#compdef jobctl
# zsh completion for jobctl. Load it with: source <(jobctl completion zsh) (after compinit)
# or install it as _jobctl in a folder of $fpath.
_jobctl() {{
  local cur=${{words[CURRENT]}} prev=${{words[CURRENT-1]}} cmdpath="" i
  local -a opts words_
  case $prev in
    ({"|".join(FILE_OPTIONS)}) _files; return ;;
    ({"|".join(value_options)}) return ;;
  esac
  for ((i = 2; i < CURRENT; i++)); do
    case ${{words[i]}} in
      (--) _files; return ;;
      ({"|".join(value_options)}) ((i++)) ;;
      (-*) ;;
      (*)
        case "$cmdpath" in
          ("") cmdpath=${{words[i]}} ;;
          ({_parents(top)}) cmdpath="$cmdpath ${{words[i]}}" ;;
          (*) break ;;
        esac ;;
    esac
  done
  case "$cmdpath" in
    ("") opts=({_words(top.options)}); words_=({described(top)}) ;;
{chr(10).join(cases).replace("; words=(", "; words_=(")}
    (*) opts=(); words_=() ;;
  esac
  if [[ $cur == -* ]]; then
    compadd -- $opts
  else
    _describe command words_
  fi
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _jobctl "$@"
else
  compdef _jobctl jobctl
fi
"""


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return bash(parser) if shell == "bash" else zsh(parser)
