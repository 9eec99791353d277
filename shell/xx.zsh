# clutch shell integration for zsh: eval "$(xx shell init zsh)" in ~/.zshrc
# Aliases from the launcher clutch replaces, with their meanings stated correctly.
alias proxies-up='proxies up'           # start the gateway and sidecars
alias proxies-down='proxies down'       # stop them
alias proxies-status='proxies status'   # one-screen status
alias cc='xx cip'             # Claude Code, init, proxy (shadows the C compiler in this shell; `command cc` reaches it)
alias ccc='xx ccf'            # Claude Code, continue, proxy, free tier
alias cc-debug='xx cid'       # Claude Code, init, direct (no gateway)
alias cc-direct='xx cid'      # Claude Code, init, direct (no gateway)
alias hsi='xx hip'            # Hermes, init, proxy
alias hsr='xx hcf'            # Hermes, continue, proxy, free tier
alias pi='xx pip'             # Pi, init, proxy (shadows the pi binary; `command pi` reaches it)
alias pic='xx pcp'            # Pi, continue, proxy
alias qw='xx qip'             # Qwen Code, init, proxy
alias qw-c='xx qcp'           # Qwen Code, continue, proxy
alias codex-run='xx xip'      # Codex, init, proxy
alias codex-res='xx xcp'      # Codex, continue (resume --last), proxy
alias oc='xx oip'             # OpenCode, init, proxy
alias gem='xx eip'            # Gemini CLI, init, proxy
alias ante='xx aip'           # Ante, init, proxy (shadows the ante binary)
alias antigravity='xx gip'    # Antigravity, init, proxy (shadows the antigravity binary)
alias pi-direct='xx pid'      # Pi, init, direct
alias hsi-direct='xx hid'     # Hermes, init, direct
alias qw-direct='xx qid'      # Qwen Code, init, direct
alias ante-direct='xx aid'    # Ante, init, direct
alias hsi-bp='xx hib'         # Hermes, init, bypass (gateway, Hermes keeps its model)
alias pi-bp='xx pib'          # Pi, init, bypass (gateway, Pi keeps its model)
# The completion below registers with compdef, which needs the completion system loaded.
if (( ! $+functions[compdef] )); then
  autoload -Uz compinit && compinit -i
fi
