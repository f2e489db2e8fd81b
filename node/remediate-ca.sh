#!/bin/bash
# placeholder: replaced by the real node script
echo '{"result":"failure","reason":"not implemented"}'
exit 1
