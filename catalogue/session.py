"""Session memory on the canvas: start or load a session, undo, roll back, see its history; and the
node the Agent Edit node adds after a session turn's trace to make its result the new checkpoint.

None of these is a planner tool (``agent=False``): the planner plans edits, not navigation (the
Agent Edit node reads "undo" / "go back to turn 2" from the instruction itself).
"""

from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

CATEGORY = f"{CATEGORY_ROOT}/session"

_SESSION_ID = Arg("session_id", "string", "The session's id (letters, digits, '_' or '-'; see Start Session).",
                  default="")
_SESSION_OUT = Out("session_id", "string", "The session's id, for the next session node or Agent Edit.")
_IMAGE_OUT = Out("image", "image", "The session's current image (its checkpoint) after this node.")

SESSION_START = Tool(
    name="session_start",
    node_id=f"{NODE_PREFIX}SessionStart",
    display_name="Start or Load Session",
    category=CATEGORY,
    description=("Starts a multi-turn editing session on this image, or loads the session with this id when it "
                 "exists (the image is then not used). With no id, the session is named after the picture's pixels, "
                 "so the same picture always continues the same session. Wire session_id to Agent Edit: each run "
                 "of it is one turn, and 'undo' or 'go back to turn 2' in its instruction navigate. Sessions are "
                 "kept in output/agentic_edit/sessions/."),
    args=(
        Arg("session_id", "string", "The session's id: letters, digits, '_' or '-', at most 64. Empty: an id made "
            "from the picture (img-...).", default=""),
        Arg("image", "image", "The picture a new session starts from (its turn 0); not needed to load one.",
            optional=True),
    ),
    outputs=(_SESSION_OUT, _IMAGE_OUT,
             Out("summary", "string", "The session's turns in a few lines.")),
    agent=False,
    search_aliases=("session", "memory", "multi-turn", "conversation"),
)

SESSION_UNDO = Tool(
    name="session_undo",
    node_id=f"{NODE_PREFIX}SessionUndo",
    display_name="Undo Session Turn",
    category=CATEGORY,
    description=("Moves the session back to the image its current one was edited from (each run undoes once "
                 "more). Nothing is deleted: Redo (the panel, or 'redo' in Agent Edit) comes back, and the next "
                 "edit from an older image starts a branch."),
    args=(
        _SESSION_ID,
        Arg("count", "int", "How many edits to undo.", default=1, minimum=1, maximum=100),
    ),
    outputs=(_SESSION_OUT, _IMAGE_OUT),
    agent=False,
    search_aliases=("undo", "session"),
)

SESSION_ROLLBACK = Tool(
    name="session_rollback",
    node_id=f"{NODE_PREFIX}SessionRollback",
    display_name="Roll Back Session",
    category=CATEGORY,
    description=("Moves the session to the result of a turn (0: the original picture) or to the image of one step "
                 "of it; the later turns stay, and the next edit starts a branch from there."),
    args=(
        _SESSION_ID,
        Arg("turn", "int", "The turn to go back to (0: the original picture).", default=0, minimum=0,
            maximum=1_000_000),
        Arg("step", "string", "A step of that turn (s1, s2, ...) to go back to its image; empty: the turn's result.",
            default=""),
    ),
    outputs=(_SESSION_OUT, _IMAGE_OUT),
    agent=False,
    search_aliases=("rollback", "go back", "branch", "session"),
)

SESSION_HISTORY = Tool(
    name="session_history",
    node_id=f"{NODE_PREFIX}SessionHistory",
    display_name="Session History",
    category=CATEGORY,
    description=("The session's images, turn by turn (batch index = turn number, 0 the original) when they all "
                 "have one size, else only the current image; and a summary of every turn: what was said, which "
                 "tools ran, which image it edited, where the session is now."),
    args=(_SESSION_ID,),
    outputs=(Out("images", "image", "Every turn's result in turn order, or the current image when the sizes "
                 "differ (the summary says which)."),
             Out("summary", "string", "One line per turn, and the current checkpoint.")),
    agent=False,
    search_aliases=("history", "turns", "session"),
)

COMMIT_TURN = Tool(
    name="commit_turn",
    node_id=f"{NODE_PREFIX}CommitTurn",
    display_name="Commit Session Turn",
    category=f"{CATEGORY_ROOT}/agent",
    description=("Makes a finished agent run the session's new checkpoint (its masks become named regions that "
                 "'it' can refer to later). Agent Edit adds it after the trace of a session turn; it is rarely "
                 "wired by hand. A run that failed never reaches it, and the session stays where it was."),
    args=(
        _SESSION_ID,
        Arg("token", "string", "The running turn's token (from the session store when the turn started)."),
        Arg("trace_path", "string", "The run's trace.json (written after every step, so the run is complete)."),
    ),
    outputs=(Out("image", "image", "The committed image: the run's result, with the pixels outside its edit "
                 "masks kept from the image it edited."),
             Out("trace_path", "string", "The trace.json it committed.")),
    agent=False,
)

TOOLS = (SESSION_START, SESSION_UNDO, SESSION_ROLLBACK, SESSION_HISTORY, COMMIT_TURN)
