package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Shell completion: urfave/cli answers `tandem ... --generate-bash-completion`
// with the commands and flags that may come next; these scripts (adapted
// from urfave/cli's autocomplete/ directory) ask it on every <TAB>.

const bashCompletion = `# bash completion for tandem: source it, or install it as
# /etc/bash_completion.d/tandem (tandem completion bash > /etc/bash_completion.d/tandem)
_tandem_complete() {
  local cur words cword
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
  fi
  words=("${words[@]:0:$cword}")
  local req="${words[*]}"
  [[ "$cur" == "-"* ]] && req="$req $cur"
  local opts
  opts=$(eval "$req --generate-bash-completion" 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -o nospace -F _tandem_complete tandem
`

const zshCompletion = `#compdef tandem
# zsh completion for tandem: put it in a directory of $fpath as _tandem
# (tandem completion zsh > "${fpath[1]}/_tandem"), then restart zsh.
_tandem() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _tandem tandem
`

func completionCommand(e *env) *cli.Command {
	script := func(s string) cli.ActionFunc {
		return func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			_, err := fmt.Fprint(e.stdout, s)
			return err
		}
	}
	return &cli.Command{
		Name:  "completion",
		Usage: "print a shell completion script (bash or zsh)",
		Description: "bash: tandem completion bash > /etc/bash_completion.d/tandem\n" +
			"zsh:  tandem completion zsh > \"${fpath[1]}/_tandem\"",
		Subcommands: []*cli.Command{
			{Name: "bash", Usage: "bash completion script", Action: script(bashCompletion)},
			{Name: "zsh", Usage: "zsh completion script", Action: script(zshCompletion)},
		},
	}
}
