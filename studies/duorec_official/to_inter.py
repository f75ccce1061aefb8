"""famerec's bundled Beauty (one line per user: user id, then item ids in time order) as the
official DuoRec code's atomic file dataset/Amazon_Beauty/Amazon_Beauty.inter; the timestamp
is the position in the user's sequence, so that the official chronological split sees the
same order as famerec.

    python to_inter.py ../shared/data/Beauty.txt dataset/Amazon_Beauty/Amazon_Beauty.inter
"""

import sys

source, target = sys.argv[1], sys.argv[2]
with open(source) as lines, open(target, "w") as out:
    out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    for line in lines:
        user, *items = line.split()
        for position, item in enumerate(items):
            out.write(f"{user}\t{item}\t5\t{position}\n")
