"""Portuguese (Brazilian) sentiment lexicon for marketplace reviews, written
for lower-cased text without punctuation as in Olist reviews."""

from feedback.analysis.lexicon import Lexicon, weighted, word_set

LEXICON = Lexicon(
    language="pt",
    valence={
        **weighted(
            3.0,
            "excelente excelentes perfeito perfeita perfeitos maravilhoso"
            " maravilhosa adorei amei fantastico fantastica incrivel otimo otima"
            " otimos otimas sensacional",
        ),
        **weighted(
            2.0,
            "recomendo gostei bonito bonita lindo linda lindos lindas satisfeito"
            " satisfeita satisfeitos parabens confiavel eficiente pontual"
            " pontualidade feliz bacana indico amo agil top show legal"
            " caprichado adoramos gostamos recomendado encantada encantado",
        ),
        **weighted(
            1.5,
            "bom boa bons boas rapido rapida rapidos rapidez obrigado obrigada"
            " agradeco antecedencia conforme correto correta cumpriu tranquilo"
            " beleza seguro sucesso confianca cedo certinho",
        ),
        **weighted(
            1.0,
            "certo antes funciona funcionando ok recebi chegou chegaram entregue"
            " entregou entregaram adequado razoavel bem",
        ),
        **weighted(
            -3.0,
            "pessimo pessima pessimos horrivel horriveis lixo fraude golpe"
            " lamentavel vergonha descaso absurdo",
        ),
        **weighted(
            -2.5,
            "ruim ruins pior decepcionado decepcionada decepcao insatisfeito"
            " insatisfeita enganado enganada enganosa enganoso desrespeito"
            " prejuizo raiva",
        ),
        **weighted(
            -2.0,
            "defeito defeituoso defeituosa quebrado quebrada quebrou danificado"
            " danificada errado errada atrasado atrasada atraso atrasou faltando"
            " faltou chateado chateada triste extraviado extraviada falsificado"
            " rasgado rasgada amassado amassada",
        ),
        **weighted(
            -1.5,
            "demorou demora demorado demorada problema problemas reclamacao"
            " devolver devolucao devolvi cancelar cancelei cancelado aguardando"
            " infelizmente mal fraco fraca fragil incompleto diferente",
        ),
        **weighted(
            -1.0,
            "falta trocar reembolso estorno esperando ainda pequeno caro ninguem"
            " ma outro outra",
        ),
        **weighted(
            -2.0,
            "falha inconformado inconformada estragado estragada vazando",
        ),
        **weighted(
            -1.5,
            "metade grave incompleta incompletos baixa devolveram devolvam"
            " devolvido fraquinho fraquinha manchado arranhado",
        ),
        **weighted(-1.0, "fora aguardo"),
        **weighted(-0.5, "apenas longo dinheiro quero agilizar"),
        **weighted(2.0, "recomendaria"),
        **weighted(0.3, "qualidade responderam resposta retorno recebido concordo"),
    },
    negated={
        **weighted(-3.0, "recomendo recomendaria"),
        **weighted(-2.5, "gostei satisfeito satisfeita"),
        **weighted(-2.0, "recebi recebido chegou chegaram entregue entregaram"),
        **weighted(-2.0, "entregou funciona funcionando responderam"),
        **weighted(-1.5, "qualidade resposta retorno concordo"),
    },
    negators=word_set("nao n nunca nem jamais sem nada nenhum nenhuma ninguem"),
    intensifiers={
        **weighted(1.5, "muito mto mt muita super bastante totalmente tao"),
        **weighted(1.8, "extremamente completamente"),
        **weighted(1.2, "bem mais"),
        **weighted(0.6, "pouco meio"),
    },
    post_intensifiers=weighted(1.5, "demais"),
    contrast=word_set("mas porem entretanto contudo todavia so"),
    function_words=word_set(
        "o os as um uma do da dos das em na nos nas que e com para pra por"
        " produto produtos entrega prazo foi loja veio tudo ja meu minha eu ele"
        " ela pedido compra comprei esta estou dentro agora ate pois seu sua"
        " como quando mesmo tambem qualidade nota recebido estava isso muito"
        " apenas so sao ser fiz pelo pela aos vcs voces voce"
        " entregue chegou recebi ainda dia dias antes site"
    ),
)
