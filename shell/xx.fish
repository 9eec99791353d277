# clutch shell integration for fish: xx shell init fish | source   (in ~/.config/fish/config.fish)
# Aliases from the launcher clutch replaces, with their meanings stated correctly.
function proxies-up --wraps 'proxies up' --description 'start the gateway and sidecars'
    proxies up $argv
end
function proxies-down --wraps 'proxies down' --description 'stop them'
    proxies down $argv
end
function proxies-status --wraps 'proxies status' --description 'one-screen status'
    proxies status $argv
end
function cc --wraps 'xx cip' --description 'Claude Code, init, proxy (shadows the C compiler in this shell; `command cc` reaches it)'
    xx cip $argv
end
function ccc --wraps 'xx ccf' --description 'Claude Code, continue, proxy, free tier'
    xx ccf $argv
end
function cc-debug --wraps 'xx cid' --description 'Claude Code, init, direct (no gateway)'
    xx cid $argv
end
function cc-direct --wraps 'xx cid' --description 'Claude Code, init, direct (no gateway)'
    xx cid $argv
end
function hsi --wraps 'xx hip' --description 'Hermes, init, proxy'
    xx hip $argv
end
function hsr --wraps 'xx hcf' --description 'Hermes, continue, proxy, free tier'
    xx hcf $argv
end
function pi --wraps 'xx pip' --description 'Pi, init, proxy (shadows the pi binary; `command pi` reaches it)'
    xx pip $argv
end
function pic --wraps 'xx pcp' --description 'Pi, continue, proxy'
    xx pcp $argv
end
function qw --wraps 'xx qip' --description 'Qwen Code, init, proxy'
    xx qip $argv
end
function qw-c --wraps 'xx qcp' --description 'Qwen Code, continue, proxy'
    xx qcp $argv
end
function codex-run --wraps 'xx xip' --description 'Codex, init, proxy'
    xx xip $argv
end
function codex-res --wraps 'xx xcp' --description 'Codex, continue (resume --last), proxy'
    xx xcp $argv
end
function oc --wraps 'xx oip' --description 'OpenCode, init, proxy'
    xx oip $argv
end
function gem --wraps 'xx eip' --description 'Gemini CLI, init, proxy'
    xx eip $argv
end
function ante --wraps 'xx aip' --description 'Ante, init, proxy (shadows the ante binary)'
    xx aip $argv
end
function antigravity --wraps 'xx gip' --description 'Antigravity, init, proxy (shadows the antigravity binary)'
    xx gip $argv
end
function pi-direct --wraps 'xx pid' --description 'Pi, init, direct'
    xx pid $argv
end
function hsi-direct --wraps 'xx hid' --description 'Hermes, init, direct'
    xx hid $argv
end
function qw-direct --wraps 'xx qid' --description 'Qwen Code, init, direct'
    xx qid $argv
end
function ante-direct --wraps 'xx aid' --description 'Ante, init, direct'
    xx aid $argv
end
function hsi-bp --wraps 'xx hib' --description 'Hermes, init, bypass (gateway, Hermes keeps its model)'
    xx hib $argv
end
function pi-bp --wraps 'xx pib' --description 'Pi, init, bypass (gateway, Pi keeps its model)'
    xx pib $argv
end
