"""English sentiment lexicon for customer feedback (reviews, tweets, surveys)."""

from feedback.analysis.lexicon import Lexicon, weighted, word_set

_NEGATORS = (
    "not no never none nothing nobody neither nor without hardly barely cannot"
    " can't don't doesn't didn't isn't aren't wasn't weren't won't wouldn't"
    " couldn't shouldn't haven't hasn't hadn't ain't dont doesnt didnt isnt"
    " arent wasnt werent cant wont wouldnt couldnt shouldnt havent hasnt aint"
)

LEXICON = Lexicon(
    language="en",
    valence={
        **weighted(
            3.0,
            "excellent amazing awesome fantastic outstanding perfect love loved"
            " loving wonderful superb brilliant incredible phenomenal exceptional"
            " flawless gorgeous stunning best beautifully",
        ),
        **weighted(
            2.0,
            "great good nice happy glad pleased thanks thank thx ty appreciate"
            " appreciated helpful friendly beautiful comfortable comfy cute lovely"
            " fun enjoy enjoyed recommend recommended fast quick easy smooth"
            " satisfied impressed kudos favorite favourite flattering soft cool"
            " reliable polite professional courteous yay congrats congratulations"
            " excited pleasant terrific fabulous stylish elegant classy grateful"
            " sweet kind exceeded impressive glowing adorable",
        ),
        **weighted(
            1.5,
            "pretty worth fits fit flattering solid sturdy quality well clean"
            " resolved fixed solved prompt efficient thankful luckily enjoyable",
        ),
        **weighted(
            1.0,
            "ok okay fine decent better works worked working nicely arrived"
            " received delivered helped like liked likes wow true",
        ),
        **weighted(
            -3.0,
            "terrible horrible awful worst disgusting pathetic useless ridiculous"
            " unacceptable hate hated furious disgusted nightmare appalling"
            " atrocious horrendous scam incompetent disgrace shameful",
        ),
        **weighted(
            -2.0,
            "bad poor rude disappointed disappointing disappointment angry upset"
            " annoyed annoying frustrated frustrating frustration broken damaged"
            " lost cancelled canceled cancellation delayed delay delays fail"
            " failed failure fails wrong worse sucks suck sucked sad unhappy"
            " unhelpful stuck stranded lousy flimsy uncomfortable itchy scratchy"
            " ugly unprofessional waste wasted overbooked misplaced ugh wtf smh"
            " fuming shitty crap crappy horrid dissatisfied mad outrageous"
            " overpriced sloppy unreliable garbage nasty irritated ruined",
        ),
        **weighted(
            -1.5,
            "problem problems issue issues slow late missed complaint complain"
            " complained unfortunately hours hung disconnected rebooked"
            " boring confusing confused difficult cheap stupid lame",
        ),
        **weighted(
            -1.0,
            "wait waiting waited hold still sorry expensive tight shame bummer"
            " excuse excuses bumped diverted charged again tired lack lacking"
            " weird strange odd unfortunate worried concerned refund missing"
            " rather small thin sheer cancel",
        ),
        **weighted(
            -2.0,
            "crash crashes crashed crashing mislead misled misleading hates"
            " impossible stole stolen sneaky rip ripped",
        ),
        **weighted(-1.0, "kidding unexpected worry never"),
        **weighted(-0.5, "not no nothing"),
        **weighted(1.0, "care cares answered"),
    },
    negated={
        **weighted(-1.5, "arrived received delivered answered"),
        **weighted(-1.5, "work works worked working help helped helpful"),
        **weighted(-2.0, "care cares recommend"),
    },
    negators=frozenset(_NEGATORS.split()),
    intensifiers={
        **weighted(1.5, "very really so super totally completely highly"),
        **weighted(1.8, "extremely incredibly absolutely"),
        **weighted(1.3, "too truly such most quite seriously"),
        **weighted(0.6, "slightly somewhat bit little kinda"),
    },
    contrast=word_set("but however although though"),
    function_words=word_set(
        "the and is are was were to of in for on with my you your it this that"
        " i me we our they have has had be been will would can could what why"
        " how when where there their from at an get got do does did just so"
        " if or about any still now after because yes also who which us them"
        " it's i'm you're i've i'll we're they're let's that's there's"
        " please flight flights service customer time hour day today tomorrow"
        " plane seat seats bag bags gate airport hold phone call back need"
        " dress size top fabric shirt sweater wear ordered fit looks"
        " nothing anyone help than then one only one's been being over"
    ),
)
